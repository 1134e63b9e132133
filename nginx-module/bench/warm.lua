-- wrk script: GET <PREFIX>0, 1, 2, ... KEYS-1, round and round (warm-up).
local n = tonumber(os.getenv("KEYS") or "1")
local prefix = os.getenv("PREFIX") or "/o4k/"
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", prefix .. (i % n))
end
