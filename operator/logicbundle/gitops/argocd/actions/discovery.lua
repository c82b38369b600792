-- Argo CD resource actions of logicbundle.io/LogicBundle: which are offered, and when.
--
-- Each action writes the logicbundle.io/requested-action annotation; the
-- operator acts on it once.  An action that cannot apply now is shown
-- disabled rather than hidden, mirroring the operator's own rules:
--   promote, abort: a rollout is in flight (status.candidateDigest and status.stage set)
--   retry: there is a candidate, in flight or held after a rollback or an abort
-- While spec.suspend is true the operator ignores actions until it is false
-- again, so all of them are disabled.

local actions = {}
local status = obj.status or {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
local inFlight = status.candidateDigest ~= nil and status.stage ~= nil
local hasCandidate = status.candidateDigest ~= nil

actions["promote"] = {
  ["disabled"] = suspended or not inFlight,
  ["iconClass"] = "fa fa-fw fa-forward",
  ["displayName"] = "Promote (end the current wait)",
}
actions["abort"] = {
  ["disabled"] = suspended or not inFlight,
  ["iconClass"] = "fa fa-fw fa-stop",
  ["displayName"] = "Abort (roll back and hold)",
}
actions["retry"] = {
  ["disabled"] = suspended or not hasCandidate,
  ["iconClass"] = "fa fa-fw fa-redo",
  ["displayName"] = "Retry the candidate from the first stage",
}
return actions
