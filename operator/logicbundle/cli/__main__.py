from logicbundle.cli import main

raise SystemExit(main())
