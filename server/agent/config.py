"""Which command runs which agent, and the runner's timings.

A thread names its agent in `acp_config.agent` (any peer may write that); the command line is looked up
here, in the runner's own configuration, and never read from the document: a chat cannot make a runner
execute a program its operator did not list. `acp_config.codexPathOverride`, `envPath` and `envHome` are
ignored for that reason (PATH decides which binary runs). `workingDirectory` is the session's cwd,
`allowWrite` decides permission requests, `model` names the reply's sender.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from chatdoc.records import AcpConfig

SCRIPTED = "scripted"


@dataclass(frozen=True)
class AgentCommand:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> tuple[str, AgentCommand]:
        """`NAME=COMMAND LINE` (shell words), e.g. `codex=codex-acp --model gpt-5.3-codex`."""
        name, sep, line = spec.partition("=")
        argv = tuple(shlex.split(line))
        if not sep or not name.strip() or not argv:
            raise ValueError(f"{spec!r}: expected NAME=COMMAND, e.g. codex=codex-acp")
        return name.strip(), cls(argv)


def scripted_command(**env: str) -> AgentCommand:
    """The scripted agent of this package, run by the same Python as the runner."""
    return AgentCommand((sys.executable, "-m", "server.agent.scripted_agent"), env)


class UnknownAgent(LookupError):
    pass


@dataclass(frozen=True)
class RunnerConfig:
    agents: Mapping[str, AgentCommand] = field(default_factory=lambda: {SCRIPTED: scripted_command()})
    default_agent: str = SCRIPTED
    name: str = field(default_factory=socket.gethostname)  # shown in claims, with a unique suffix per run
    lease_s: float = 10.0  # a generating reply whose lease passed is taken to be a dead runner's
    claim_settle_s: float = 0.1  # how long a concurrent claim has to arrive before the agent is prompted
    cancel_grace_s: float = 3.0  # after session/cancel, how long the agent has to stop before it is killed
    agent_idle_s: float = 300.0  # an agent process with no turn for this long is stopped
    backlog_window_s: float = 600.0  # unanswered prompts older than this are not answered on start
    cwd: str = field(default_factory=os.getcwd)  # the agent's working directory unless the thread names one

    def agent_for(self, acp: AcpConfig | None) -> tuple[str, AgentCommand]:
        name = (acp.agent if acp is not None else None) or self.default_agent
        command = self.agents.get(name)
        if command is None:
            known = ", ".join(sorted(self.agents)) or "none"
            raise UnknownAgent(f"this runner has no agent named {name!r} (it has: {known})")
        return name, command

    def sender_for(self, acp: AcpConfig | None, agent_name: str) -> str:
        """Who the reply is from: the thread's model when it names one, else the agent's name."""
        return (acp.model if acp is not None else None) or agent_name
