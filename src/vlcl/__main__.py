from vlcl.entry import main

raise SystemExit(main())
