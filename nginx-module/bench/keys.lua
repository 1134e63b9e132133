-- wrk script: GET <PREFIX><random 0..KEYS-1>
local n = tonumber(os.getenv("KEYS") or "1")
local prefix = os.getenv("PREFIX") or "/o4k/"
math.randomseed(os.time())
request = function()
  return wrk.format("GET", prefix .. math.random(0, n - 1))
end
