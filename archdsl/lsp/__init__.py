"""`archdsl lsp`: a Language Server Protocol server for .arch files, on pygls.

    workspace.py    the compiler kept warm: open documents, parsed modules, one analysis each
    trace.py        the elaborator, traced: source span -> values, IR nodes, block applications
    index.py        definitions and uses of names, from the AST
    text.py         spans <-> LSP positions
    features.py     diagnostics, hover, definition, references, rename, symbols, inlay hints, formatting
    completion.py   completion, from the text before the cursor
    describe.py     how ops, blocks and values are shown
    server.py       the pygls server: LSP messages -> features
    cli.py          the `archdsl lsp` subcommand
"""
