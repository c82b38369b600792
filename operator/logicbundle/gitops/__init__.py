"""Integrations with GitOps tools: what Argo CD and Flux need to read a ``LogicBundle``.

Flux needs nothing from us (it reads the kstatus conditions the operator
writes).  Argo CD needs a health check and resource actions in Lua; they live
as ``.lua`` files in :mod:`logicbundle.gitops.argocd`, shipped as package
data, and ``python -m logicbundle.gitops.argocd`` turns them into the
``argocd-cm`` patch so the docs and the chart never hand-copy them.
"""
