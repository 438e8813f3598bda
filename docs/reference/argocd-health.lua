-- Argo CD health check for aliasd.io/Alias (resource.customizations.health.aliasd.io_Alias).
-- Healthy once aliasd serves every hostname (Ready=True for the current generation);
-- Degraded when aliasd refuses a name (Accepted=False: fixing it needs a change in Git)
-- or a health-checked target is down (Healthy=False: Degraded or AllTargetsUnhealthy);
-- Progressing while aliasd has not caught up or the Service has no address yet.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for aliasd to report the status"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for aliasd to observe generation " .. obj.metadata.generation
  return hs
end
local found = {}
for _, c in ipairs(obj.status.conditions) do
  found[c.type] = c
end
local accepted, ready, healthy = found["Accepted"], found["Ready"], found["Healthy"]
if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = accepted.reason .. ": " .. (accepted.message or "")
  return hs
end
if healthy ~= nil and healthy.status == "False" then
  hs.status = "Degraded"
  hs.message = healthy.reason .. ": " .. (healthy.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
else
  hs.message = "Waiting for the Ready condition"
end
return hs
