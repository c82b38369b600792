-- Argo CD resource action "promote" of logicbundle.io/LogicBundle.
--
-- Requests the action through the logicbundle.io/requested-action annotation
-- (value <action>@<token>), so GitOps sees no drift in spec.  The operator acts
-- once per distinct value; the token is the UTC time plus the resourceVersion,
-- so two requests in the same second still differ.
--
-- Argo CD's sandbox for argocd-cm scripts opens no global os (util/lua registers
-- its safe os.time/os.date under the table library); they are reached only
-- through require("os"), as Argo CD's built-in actions do.
local os = require("os")
local token = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
if obj.metadata.resourceVersion ~= nil then
  token = token .. "-" .. tostring(obj.metadata.resourceVersion)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["logicbundle.io/requested-action"] = "promote@" .. token
return obj
