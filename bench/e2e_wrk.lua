-- wrk script for bench/end_to_end.py: every connection is one browser with its own session.
--
-- wrk gives each thread its own Lua state but tells a script nothing about connections, so
-- end_to_end.py runs wrk with as many threads as connections (-t N -c N): each thread
-- drives exactly one connection, and the globals below are that connection's cookie jar.
--
-- args: <scenario> <cookies>
--   scenario  read | write | new
--   cookies   1: the app keeps sessions in cookies (check them); 0: the bare app
--
-- read, write: the connection's first request goes to /seed (no cookie); the session
-- cookie it gets back, and every later Set-Cookie, is sent on each following request.
-- Checks: /seed must set a cookie; /read answers 409 if the session is not the seeded one
-- (counted as non-2xx); /write returns the session's counter, which must be one more than
-- the one before (a stale or lost cookie repeats or restarts it).
-- new: no cookie is ever sent, so every request creates a session; each response must set
-- a cookie.
--
-- done() prints one "e2e <name> <value>" line per figure, for end_to_end.py to parse.

local scenario = "read"
local check_cookies = true
local base_headers = {
   ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
   ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
   ["Accept-Language"] = "en-GB,en;q=0.5",
   ["Sec-Fetch-Dest"] = "document",
   ["Sec-Fetch-Mode"] = "navigate",
   ["Sec-Fetch-Site"] = "same-origin",
}

local jar = {}          -- cookie name -> value (this connection's)
local seeded = false    -- read/write: /seed has been answered with a 2xx
local inflight = nil    -- path of the request on the wire (one at a time: no pipelining)
local last_counter = 0  -- write: the counter the app returned last

-- Figures of this thread, read by done() through thread:get().
responses = 0
non2xx = 0
with_cookie = 0      -- responses that set a cookie
missing_cookie = 0   -- /seed or /new responses that set none
wrong_counter = 0    -- /write answered with a counter that is not the last one + 1
seeds = 0

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   scenario = args[1] or "read"
   check_cookies = args[2] ~= "0"
end

local function cookie_header()
   local parts = {}
   for name, value in pairs(jar) do
      parts[#parts + 1] = name .. "=" .. value
   end
   if #parts == 0 then
      return nil
   end
   return table.concat(parts, "; ")
end

function request()
   local path = "/" .. scenario
   local headers = {}
   for name, value in pairs(base_headers) do
      headers[name] = value
   end
   if scenario ~= "new" then
      if not seeded then
         path = "/seed"
      end
      local cookie = cookie_header()
      if cookie then
         headers["Cookie"] = cookie
      end
   end
   inflight = path
   return wrk.format("GET", path, headers)
end

local function keep(set_cookie)
   local name, value = string.match(set_cookie, "^%s*([^=;%s]+)=([^;]*)")
   if not name then
      return
   end
   local attributes = string.lower(set_cookie)
   if value == "" or value == "''" or string.find(attributes, "max-age=0", 1, true)
      or string.find(attributes, "01 jan 1970", 1, true) then
      jar[name] = nil
   else
      jar[name] = value
   end
end

function response(status, headers, body)
   responses = responses + 1
   local ok = status >= 200 and status < 300
   if not ok then
      non2xx = non2xx + 1
   end
   local got = false
   for name, value in pairs(headers) do
      if string.lower(name) == "set-cookie" then
         got = true
         keep(value)
      end
   end
   if got then
      with_cookie = with_cookie + 1
   end
   if inflight == "/seed" then
      seeds = seeds + 1
      if check_cookies and not got then
         missing_cookie = missing_cookie + 1
      end
      seeded = ok
   elseif scenario == "new" then
      if check_cookies and not got then
         missing_cookie = missing_cookie + 1
      end
   elseif scenario == "write" and check_cookies and ok then
      local counter = tonumber(body)
      if counter ~= last_counter + 1 then
         wrong_counter = wrong_counter + 1
      end
      last_counter = counter or last_counter
   end
end

function done(summary, latency, requests)
   local totals = {
      responses = 0, non2xx = 0, with_cookie = 0, missing_cookie = 0,
      wrong_counter = 0, seeds = 0,
   }
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
   end
   local out = {
      string.format("e2e requests %d", summary.requests),
      string.format("e2e duration_us %d", summary.duration),
      string.format("e2e connect_errors %d", summary.errors.connect),
      string.format("e2e read_errors %d", summary.errors.read),
      string.format("e2e write_errors %d", summary.errors.write),
      string.format("e2e status_errors %d", summary.errors.status),
      string.format("e2e timeouts %d", summary.errors.timeout),
      string.format("e2e latency_mean_us %.1f", latency.mean),
      string.format("e2e latency_max_us %d", latency.max),
      string.format("e2e p50_us %d", latency:percentile(50)),
      string.format("e2e p90_us %d", latency:percentile(90)),
      string.format("e2e p99_us %d", latency:percentile(99)),
      string.format("e2e threads %d", #threads),
   }
   for name, value in pairs(totals) do
      out[#out + 1] = string.format("e2e %s %d", name, value)
   end
   io.write(table.concat(out, "\n") .. "\n")
end
