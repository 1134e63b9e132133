// Summarises a results file of the http-cache-tests CLI (the JSON it prints)
// the way the suite judges each result (lib/display.mjs determineTestResult:
// a test whose dependency did not pass counts as not passed; kind
// required/optimal/check, no kind meaning required; browser_only tests are not
// run by the CLI and not counted; total = tests of that kind with a result).
// Checked against the suite's own results/*.json: trafficserver 119/159,
// apache 119/165, squid 122/165, nginx 94/165, varnish 107/165 required.
//   node cache-tests-summary.mjs <suite dir> <results.json> [name] [--failed]
// --failed: then the required tests not passed, grouped by the suite's test
// file (freshness, Age, Vary, ...): id, verdict, name and the harness message.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const args = process.argv.slice(2)
const showFailed = args.includes('--failed')
const [suiteDir, resultsFile, label] = args.filter(a => a !== '--failed')
if (!suiteDir || !resultsFile) {
  console.error('usage: node cache-tests-summary.mjs <suite dir> <results.json> [name] [--failed]')
  process.exit(2)
}
const load = async rel => (await import(pathToFileURL(path.resolve(suiteDir, rel)).href)).default
// The same test list as the suite's cli.mjs.
const suites = [...await load('tests/index.mjs'), await load('tests/surrogate-control.mjs')]
let results
try {
  results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))
} catch (e) {
  console.error(`${resultsFile}: not a results file (${e.message})`)
  process.exit(1)
}

const byId = new Map()
for (const suite of suites) for (const t of suite.tests) byId.set(t.id, { ...t, suite: suite.id })

const memo = new Map()
function verdict (id, seen = new Set()) {
  if (memo.has(id)) return memo.get(id)
  const t = byId.get(id)
  const r = results[id]
  let v
  if (t === undefined || r === undefined) {
    v = 'untested'
  } else if ((t.depends_on || []).some(d => seen.has(d) || !['pass', 'yes'].includes(verdict(d, new Set([...seen, id]))))) {
    v = 'dependency_fail'
  } else if (Array.isArray(r) && r[0] === 'Setup') {
    v = r[1] === 'retry' ? 'retry' : 'setup_fail'
  } else {
    const kind = t.kind || 'required'
    if (kind === 'check') v = r === true ? 'yes' : 'no'
    else v = r === true ? 'pass' : (kind === 'optimal' ? 'optional_fail' : 'fail')
  }
  memo.set(id, v)
  return v
}

const kinds = { required: { n: 0, pass: 0, other: {} }, optimal: { n: 0, pass: 0, other: {} }, check: { n: 0, pass: 0, other: {} } }
const failed = new Map()
for (const [id, t] of byId) {
  if (t.browser_only) continue
  const v = verdict(id)
  if (v === 'untested') continue
  const kind = t.kind || 'required'
  const k = kinds[kind]
  k.n++
  if (v === 'pass' || v === 'yes') {
    k.pass++
    continue
  }
  k.other[v] = (k.other[v] || 0) + 1
  if (kind === 'required') {
    if (!failed.has(t.suite)) failed.set(t.suite, [])
    failed.get(t.suite).push([id, v, t.name, results[id]])
  }
}
const fmt = k => `${k.pass}/${k.n}` +
  (Object.keys(k.other).length ? ' (' + Object.entries(k.other).map(([a, b]) => `${b} ${a}`).join(', ') + ')' : '')
const all = Object.values(kinds).reduce((a, k) => [a[0] + k.pass, a[1] + k.n], [0, 0])
console.log(`${label || path.basename(resultsFile, '.json')}: required passed ${fmt(kinds.required)}; ` +
  `optimal ${fmt(kinds.optimal)}; check yes ${fmt(kinds.check)}; all ${all[0]}/${all[1]}`)
if (showFailed) {
  for (const [suite, list] of failed) {
    console.log(`  ${suite} (${list.length})`)
    for (const [id, v, name, r] of list) {
      const why = Array.isArray(r) ? ` -- ${r.slice(1).join(' ')}` : ''
      console.log(`    ${id} [${v}] ${name.replace(/\s+/g, ' ')}${why}`)
    }
  }
}
