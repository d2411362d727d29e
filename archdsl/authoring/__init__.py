"""Authoring and teaching tools (issue 9): the canonical formatter (`archdsl fmt`), syntax
highlighting (a Pygments lexer, `archdsl show`, highlighted error excerpts), explained shape and
parameter arithmetic (`archdsl summary --explain`), unrolled recurrent drawings and receptive
fields (`archdsl render --unroll K / --receptive-field LAYER`) and the one-page HTML report
(`archdsl report`).

Every module here sits downstream of the compiler: it reads source text, the parse tree or the
IR and never changes them. The modules import what they need inside their functions, so that
Pygments, which loads `archdsl.authoring.highlight` through an entry point, pays for the lexer
only (plus `import archdsl`).
"""
