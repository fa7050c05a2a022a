import sys

from dsrflow_cli.main import main

sys.exit(main())
