"""logicbundle: hot-reload signed logic bundles inside running pods, in stages, without restarts.

The public surface of each concern lives in its own sub-package (``api``,
``bundle``, ``oci``, ``trust``, ``rollout``, ``controller``, ``webhook``,
``distributor``, ``agent``, ``sdk``, ``cli``); this module only names the
version and the error root.
"""

from logicbundle.errors import LogicBundleError

__version__ = "0.1.0.dev0"

__all__ = ["LogicBundleError", "__version__"]
