from litegate.cli import main

raise SystemExit(main())
