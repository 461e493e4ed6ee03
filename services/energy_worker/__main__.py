import sys

from services.cli import main

main(["energy-worker", *sys.argv[1:]])
