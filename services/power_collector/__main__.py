import sys

from services.cli import main

main(["power-collector", *sys.argv[1:]])
