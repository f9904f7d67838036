-- wrk script for bench.ts and soak.ts (run with: wrk ... -s bench/wrk.lua URL -- KEY=VALUE ...).
--
-- Arguments (after `--`), all KEY=VALUE:
--   mode=handshake   POST, empty body, Validation-Token header
--   mode=static      POST the template with the uuid fixed to `uuid=` (duplicate events)
--   mode=unique      POST the template with a fresh uuid for every request
--   mode=hmac        as unique, and sign each body: `<header>: sha256=<hex HMAC-SHA256(secret, body)>`
--   template=PATH    a body with the marker @@UUID@@ where the uuid goes (last key: see below)
--   prefix=STR       19 characters "xxxxxxxx-xxxx-4xxx-" that start every generated uuid
--   token=STR        sent as Verification-Token (omitted when empty)
--   secret=STR       the HMAC secret (at most 64 bytes); header=NAME the signature header
--   uuid=STR         the fixed uuid for mode=static
--
-- HMAC without a library: LuaJIT has bit operations, so SHA-256 is written out below. Because
-- only the uuid changes and it sits near the end of the body, the inner hash state after the
-- key block and every whole 64-byte block before the uuid is computed once per thread; each
-- request then costs 2-3 compressions for the inner hash and 1 for the outer one.
--
-- done() prints one line "WRKJSON {...}" with the summary, latency percentiles (microseconds)
-- and per-answer counts (200 received / 200 duplicate / 200 other / non-200) and the number of
-- requests written, which bench.ts checks against the database.

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit, tohex = bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
local byte, char, format, sub = string.byte, string.char, string.format, string.sub

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end
local IV = {
  tobit(0x6a09e667), tobit(0xbb67ae85), tobit(0x3c6ef372), tobit(0xa54ff53a),
  tobit(0x510e527f), tobit(0x9b05688c), tobit(0x1f83d9ab), tobit(0x5be0cd19),
}
local W = {}

-- One SHA-256 compression of the 64 bytes of `s` starting at `off` (1-based) into a new state.
local function compress(H, s, off)
  for i = 0, 15 do
    local a, b, c, d = byte(s, off + i * 4, off + i * 4 + 3)
    W[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  for i = 16, 63 do
    local w15, w2 = W[i - 15], W[i - 2]
    local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
    local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
    W[i] = tobit(W[i - 16] + s0 + W[i - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for i = 0, 63 do
    local s1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = h + s1 + ch + K[i + 1] + W[i]
    local s0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + s0 + maj)
  end
  return {
    tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d),
    tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h),
  }
end

-- Finishes a hash: `tail` (under 64 bytes) is the unprocessed rest, `total` the message length.
local function finish(H, tail, total)
  local bits = total * 8
  local pad = 64 - ((#tail + 9) % 64)
  if pad == 64 then pad = 0 end
  local block = tail .. "\128" .. string.rep("\0", pad) .. "\0\0\0\0" ..
    char(band(rshift(bits, 24), 255), band(rshift(bits, 16), 255), band(rshift(bits, 8), 255),
      band(bits, 255))
  for off = 1, #block, 64 do H = compress(H, block, off) end
  return H
end

local function wordsToBytes(H)
  local out = {}
  for i = 1, 8 do
    local w = H[i]
    out[i] = char(band(rshift(w, 24), 255), band(rshift(w, 16), 255), band(rshift(w, 8), 255),
      band(w, 255))
  end
  return table.concat(out)
end

local function wordsToHex(H)
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i], 8) end
  return table.concat(out)
end

-- Precomputes HMAC-SHA256(secret, prefix .. x) for varying x: returns sign(x) -> hex.
local function hmacSigner(secret, prefix)
  assert(#secret <= 64, "the HMAC secret must be at most 64 bytes")
  local key = secret .. string.rep("\0", 64 - #secret)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    ipad[i] = char(bxor(k, 0x36))
    opad[i] = char(bxor(k, 0x5c))
  end
  local inner = compress(IV, table.concat(ipad), 1)
  local outer = compress(IV, table.concat(opad), 1)
  local whole = math.floor(#prefix / 64)
  for b = 0, whole - 1 do inner = compress(inner, prefix, b * 64 + 1) end
  local rest = sub(prefix, whole * 64 + 1)
  local prefixLen = #prefix
  return function(x)
    local tail = rest .. x
    local H = inner
    local done = 0
    while #tail - done >= 64 do
      H = compress(H, tail, done + 1)
      done = done + 64
    end
    H = finish(H, sub(tail, done + 1), 64 + prefixLen + #x)
    return wordsToHex(finish(outer, wordsToBytes(H), 96))
  end
end

-- Self-test hook for bench development: `luajit bench/wrk.lua selftest SECRET PREFIX SUFFIX`.
if arg and arg[1] == "selftest" then
  print(hmacSigner(arg[2], arg[3])(arg[4]))
  return
end

local threads = {}
local nextId = 0

function setup(thread)
  nextId = nextId + 1
  thread:set("id", nextId)
  table.insert(threads, thread)
end

local req
local opts = {}

local function readFile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function init(args)
  for _, a in ipairs(args) do
    local k, v = string.match(a, "^([%w_]+)=(.*)$")
    if k then opts[k] = v end
  end
  sent, received, duplicate, other200, non200 = 0, 0, 0, 0, 0
  local mode = opts.mode or "unique"
  local headers = {
    ["Content-Type"] = "application/json; charset=UTF-8",
    ["User-Agent"] = "RingCentral-Webhook/8.3",
    ["Accept"] = "application/json",
  }
  if opts.token and opts.token ~= "" then headers["Verification-Token"] = opts.token end
  if mode == "handshake" then
    headers["Content-Type"] = "application/json"
    headers["Validation-Token"] = "3f2b8a4e-0c1d-4e5f-9a8b-7c6d5e4f3a2b"
    local fixed = wrk.format("POST", nil, headers, "")
    req = function() return fixed end
    return
  end
  local template = readFile(opts.template)
  local at = string.find(template, "@@UUID@@", 1, true)
  local before, after = sub(template, 1, at - 1), sub(template, at + 8)
  if mode == "static" then
    local fixed = wrk.format("POST", nil, headers, before .. opts.uuid .. after)
    req = function() return fixed end
    return
  end
  local prefix = opts.prefix .. format("%04x", 0x8000 + id) .. "-"
  local n = 0
  if mode == "unique" then
    req = function()
      n = n + 1
      return wrk.format("POST", nil, headers, before .. prefix .. format("%012x", n) .. after)
    end
  elseif mode == "hmac" then
    local sign = hmacSigner(opts.secret, before)
    local header = opts.header or "X-Hub-Signature-256"
    req = function()
      n = n + 1
      local x = prefix .. format("%012x", n) .. after
      headers[header] = "sha256=" .. sign(x)
      return wrk.format("POST", nil, headers, before .. x)
    end
  else
    error("unknown mode " .. mode)
  end
end

function request()
  sent = sent + 1
  return req()
end

function response(status, headers, body)
  if status == 200 then
    if string.find(body, '"received"', 1, true) then
      received = received + 1
    elseif string.find(body, '"duplicate"', 1, true) then
      duplicate = duplicate + 1
    else
      other200 = other200 + 1
    end
  else
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local t = { sent = 0, received = 0, duplicate = 0, other200 = 0, non200 = 0 }
  for _, th in ipairs(threads) do
    for k in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
  end
  local e = summary.errors
  io.write(format(
    'WRKJSON {"durationUs":%d,"requests":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,' ..
      '"write":%d,"status":%d,"timeout":%d},"latencyUs":{"min":%d,"mean":%.1f,"max":%d,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d},"sent":%d,"received":%d,"duplicate":%d,' ..
      '"other200":%d,"non200":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), t.sent, t.received,
    t.duplicate, t.other200, t.non200))
end
