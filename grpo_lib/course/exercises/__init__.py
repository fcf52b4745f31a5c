"""Checkers of the fill-in exercises, one module per notebook: `ex01` (1.1), `ex02` (2.1, 2.2), `ex03` (3.1, 3.2),
`ex04` (4.1, 4.2), `ex05` (5.1), `ex06` (6.1, 6.2). What they share (the result, the messages, the loop over
cases) is `checking`."""
