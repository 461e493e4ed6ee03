import sys

from services.cli import main

main(["cost-worker", *sys.argv[1:]])
