"""The web app (Streamlit): browse, compare and explore information flow in the browser.

``infoflow app`` runs ``streamlit run`` on :data:`infoflow.app.launcher.ENTRY_SCRIPT`. Each page has a
pure-logic module (``runs``, ``compare``, ``heatmaps``, ``explorer``, ``hidden``, ``features``, ``launch``)
that its Streamlit page in ``infoflow.app.views`` calls; ``figures`` turns their frames into plotly figures.
"""
