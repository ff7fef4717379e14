from tinyar.cli import main

raise SystemExit(main())
