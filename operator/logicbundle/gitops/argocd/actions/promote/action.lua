-- Argo CD resource action "promote" of logicbundle.io/LogicBundle.
--
-- Requests the action through the logicbundle.io/requested-action annotation
-- (value <action>@<token>), so GitOps sees no drift in spec.  The operator acts
-- once per distinct value; the token is the UTC time (os.date is one of the two
-- os functions Argo CD's sandbox offers) plus the resourceVersion, so two
-- requests in the same second still differ.
local token = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
if obj.metadata.resourceVersion ~= nil then
  token = token .. "-" .. tostring(obj.metadata.resourceVersion)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["logicbundle.io/requested-action"] = "promote@" .. token
return obj
