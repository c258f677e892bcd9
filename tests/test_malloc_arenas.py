"""The driver caps glibc's malloc arenas (core.malloc_arenas) unless MALLOC_ARENA_MAX is set: checked in a fresh
process, where mallopt's answer is real."""
import os
import subprocess
import sys

CODE = "from core.malloc_arenas import limit_malloc_arenas as f; print(f())"


def _run(env):
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return done.stdout.strip()


def test_arenas_are_capped_on_glibc_unless_the_environment_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    assert _run(env) == ("True" if glibc else "False")
    assert _run({**env, "MALLOC_ARENA_MAX": "4"}) == "False"
