import sys

from services.cli import main

main(["runner", *sys.argv[1:]])
