from vlcl.app.entry import main

raise SystemExit(main())
