from effgan.cli import main

raise SystemExit(main())
