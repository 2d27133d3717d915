"""Entry script of ``streamlit run`` (see ``infoflow app``)."""

from infoflow.app.shell import main

main()
