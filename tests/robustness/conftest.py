"""The robustness suite's figures go to the terminal summary as well as to each test's output."""


def pytest_terminal_summary(terminalreporter):
    from tests.robustness.common import FIGURES

    if FIGURES:
        terminalreporter.section("robustness figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
