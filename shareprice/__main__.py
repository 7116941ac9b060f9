from shareprice.cli import main

main()
