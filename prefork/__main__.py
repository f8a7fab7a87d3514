from prefork.cli import main

raise SystemExit(main())
