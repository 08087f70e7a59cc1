"""The playground's static page (index.html, playground.js, playground.css): plain files, no
build step, served at `/` by api/playground.py. Kept beside the code so the wheel ships them."""
