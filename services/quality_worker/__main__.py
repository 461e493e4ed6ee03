import sys

from services.cli import main

main(["quality-worker", *sys.argv[1:]])
