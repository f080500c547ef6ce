import sys

try:  # a Ctrl-C while the modules load or the parser is built is a stop like any other, not a traceback
    from reproduce.cli import main

    status = main()
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    status = 130
sys.exit(status)
