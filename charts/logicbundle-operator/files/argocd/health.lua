-- Argo CD health check for logicbundle.io/LogicBundle.
--
-- Argo CD runs this in a sandbox with only the base, table and package
-- libraries (os.time/os.date only through require("os")): there is no string
-- library, so the script uses nothing but comparisons, tonumber/tostring and
-- concatenation.
-- The mapping (docs/gitops.md has the table):
--   no status, or metadata.generation not observed yet   -> Progressing
--   Ready reason Suspended (spec.suspend, acknowledged)    -> Suspended
--   Stalled=True (rolled back, aborted, frozen, failed
--     verification, invalid source, invalid spec)          -> Degraded
--   Reconciling=True, reason WaitingForPromotion           -> Suspended
--   Reconciling=True, reason ResolveFailed (retried)       -> Degraded
--   Reconciling=True (any other stage or wait)             -> Progressing
--   Ready=True                                             -> Healthy
--   Ready=False otherwise (not set by the operator today)  -> Degraded
-- Argo CD's "Suspended" means "paused until a human acts", as for a paused
-- Argo Rollout: a suspended bundle and a stage waiting for `promote` are both.

local hs = {}

local function find(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

local function describe(condition)
  local text = condition.reason or "Unknown"
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = tonumber(obj.metadata.generation)
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(status.conditions, "Ready")
local reconciling = find(status.conditions, "Reconciling")
local stalled = find(status.conditions, "Stalled")

if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil
    and tonumber(ready.observedGeneration) < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

if ready ~= nil and ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  if isTrue(stalled) and stalled.reason ~= "Suspended" then
    hs.message = hs.message .. " (stalled before: " .. describe(stalled) .. ")"
  end
  return hs
end

if isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if isTrue(reconciling) then
  if reconciling.reason == "WaitingForPromotion" then
    hs.status = "Suspended"
  elseif reconciling.reason == "ResolveFailed" then
    -- Retried, but nothing moves until the registry, tag or Secret is fixed.
    hs.status = "Degraded"
    hs.message = describe(ready or reconciling)
    return hs
  else
    hs.status = "Progressing"
  end
  hs.message = describe(reconciling)
  return hs
end

if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
