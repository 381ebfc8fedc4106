from snapgraph.cli import main

raise SystemExit(main())
