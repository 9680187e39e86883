"""The program: command-line settings, wiring engine + nodes (+ server), headless runs. No node logic here."""
