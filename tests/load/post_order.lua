-- wrk script: POST a valid OrderCreated body with a varying customer key,
-- asking for the async arm of the checkout canary (trusted from 127.0.0.1).
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"orderId":"o-%d","customerId":"c-%d","items":[{"sku":"SKU-1","quantity":1,"unitPriceCents":999}],"totalCents":999}',
    counter, counter % 1000)
  return wrk.format("POST", "/orders",
    {["content-type"] = "application/json", ["x-canary"] = "always"}, body)
end
