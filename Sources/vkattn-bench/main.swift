import VkAttn
let instance = try Instance()
for c in instance.capabilities { print(c) }
