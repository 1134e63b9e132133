// Preloaded into the suite's origin (node --import): its server.listen(port)
// would bind every interface; bind 127.0.0.1 only.
import net from 'net'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length >= 1 && (typeof args[0] === 'number' || typeof args[0] === 'string') && (args.length === 1 || typeof args[1] === 'function')) {
    return listen.call(this, { port: Number(args[0]), host: '127.0.0.1' }, ...args.slice(1))
  }
  return listen.apply(this, args)
}
