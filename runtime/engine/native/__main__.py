from runtime.engine.native import main

main()
