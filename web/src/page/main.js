// The page served at `/` by `chatdoc serve`: takes the token from the address bar, then mounts the app.
import { html } from 'htm/preact'
import { render } from 'preact'
import { App } from './app.js'
import { takeToken } from './session.js'
import './style.css'

const token = takeToken()
render(html`<${App} token=${token} />`, document.getElementById('app'))
