"""`python -m client.bench`: the serving benchmark (serving.py)."""
import sys

from client.bench.serving import main

sys.exit(main(prog="python -m client.bench"))
