-- Argo CD health of an AgentRun (agents.agentrun.dev/v1alpha1):
--   Pending, Running (or no status yet)  -> Progressing
--   Succeeded                            -> Healthy
--   Failed, Cancelled                    -> Degraded
-- with the run's status.message. A change the controller has not observed
-- yet (status.observedGeneration behind metadata.generation, as after a
-- cancel) is Progressing until it has.
local hs = { status = "Progressing", message = "Waiting for a Podman host to take the run" }
if obj.status == nil then
  return hs
end
if obj.status.message ~= nil then
  hs.message = obj.status.message
end
local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end
local phase = obj.status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
end
return hs
