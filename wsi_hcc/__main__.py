from wsi_hcc.cli.app import main

main(prog_name="wsi-hcc")
