"""The Streamlit pages: each ``render(store_path)`` draws one page from its logic module."""
