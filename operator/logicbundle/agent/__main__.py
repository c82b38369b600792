"""``python -m logicbundle.agent``: the same as ``logicbundle agent``."""

from logicbundle.agent._main import main

raise SystemExit(main())
