from tjepa.cli import main

main()
