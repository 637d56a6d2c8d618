-- A different, never-uploaded debug id on every request: each one is an uncached miss.
math.randomseed(os.time())
request = function()
  local id = string.format("%08X%08X%08X%08X1", math.random(0, 0x7fffffff),
    math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  return wrk.format("GET", "/bench.pdb/" .. id .. "/bench.sym")
end
