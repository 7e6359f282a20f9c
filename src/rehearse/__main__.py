from rehearse.commands.cli import main

main()
