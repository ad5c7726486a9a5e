# Sourced by bench/gpu.sh and tests/gpu/run_gpu_checks.sh: the wheels carried in .whl/ (python -m bench.gpu_wheels)
# installed once into $UNIFIER_SITE (default /tmp/site; a stamp names what was installed, so the second script
# installs nothing again), and this checkout on PYTHONPATH: on the lent GPU machine nothing is pip-installed,
# unifier runs from the tree (unifier/_source_tree.py finds unifier.backends there).
UNIFIER_SITE="${UNIFIER_SITE:-/tmp/site}"
if compgen -G ".whl/*.whl" > /dev/null; then
    wanted="$(cd .whl && ls *.whl | sort | sha256sum | cut -c1-16)"
    if [ "$(cat "$UNIFIER_SITE/.unifier-wheels" 2>/dev/null)" != "$wanted" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$UNIFIER_SITE" .whl/*.whl || { echo "installing .whl/ failed" >&2; exit 1; }
        echo "$wanted" > "$UNIFIER_SITE/.unifier-wheels"
        echo "installed $(ls .whl/*.whl | wc -l) wheels into $UNIFIER_SITE"
    fi
fi
if [ -d "$UNIFIER_SITE" ]; then
    case ":${PYTHONPATH:-}:" in *":$UNIFIER_SITE:"*) ;; *) export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$UNIFIER_SITE" ;; esac
    export PATH="$UNIFIER_SITE/bin:$PATH"
fi
"$PY" -c "import unifier" 2>/dev/null || export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
