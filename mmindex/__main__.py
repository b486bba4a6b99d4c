from mmindex.cli import main

main()
