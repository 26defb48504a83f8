from vlcl.cli import main

raise SystemExit(main())
