"""`archdsl lsp`: a Language Server Protocol server for .arch files, on pygls.

    workspace.py    the compiler kept warm: open documents, parsed modules, one analysis each
    trace.py        the elaborator, traced: source span -> values, IR nodes, block applications
    index.py        definitions and uses of names, from the AST
    text.py         spans <-> LSP positions
    features.py     diagnostics, hover, completion, navigation, symbols, formatting, inlay hints
    server.py       the pygls server: LSP messages -> features
"""
