"""One module per group of ``plstream`` commands; each is imported only when its command runs.

Every command is a function ``(args: argparse.Namespace) -> int`` (the exit
status); :data:`COMMANDS` maps a command name to ``"module:function"``.
"""

COMMANDS = {
    "run": "plstream.commands.local_run:run",
    "replay": "plstream.commands.local_run:replay",
    "acquire": "plstream.commands.split_run:acquire",
    "analyze": "plstream.commands.split_run:analyze",
    "simulate": "plstream.commands.simulate:simulate",
    "evaluate": "plstream.commands.simulate:evaluate",
    "recover": "plstream.commands.recover:recover",
    "dashboard": "plstream.commands.dashboard:dashboard",
    "keys": "plstream.commands.keys:keys",
    "export": "plstream.commands.export:export",
}
