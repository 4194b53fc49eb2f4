"""The page's look: Gradio's Soft theme and the CSS of the score card, legend and tables."""

import gradio as gr

THEME = gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")
CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
.afiqa-card { display: grid; grid-template-columns: auto 1fr; align-items: center; column-gap: 1.5rem;
    padding: 1rem 1.5rem; border-radius: 12px; border: 1px solid var(--border-color-primary);
    background: var(--block-background-fill); --afiqa: #64748b; }
.afiqa-big { font-size: 3.4rem; font-weight: 800; line-height: 1; color: var(--afiqa); }
.afiqa-of { font-size: 1.2rem; font-weight: 500; opacity: 0.6; }
.afiqa-label { font-size: 2rem; font-weight: 700; text-transform: capitalize; color: var(--afiqa); }
.afiqa-problem { font-size: 1.1rem; font-weight: 500; text-transform: none; color: var(--body-text-color); }
.afiqa-pm { font-size: 0.5em; font-weight: 500; }
.afiqa-bar { grid-column: 1 / -1; height: 10px; margin-top: 0.8rem; border-radius: 5px;
    background: var(--neutral-200); overflow: hidden; }
.afiqa-bar > div { height: 100%; background: var(--afiqa); }
.afiqa-empty { grid-template-columns: auto 1fr; opacity: 0.75; }
.afiqa-bad { --afiqa: #d1242f; } .afiqa-poor { --afiqa: #e8590c; } .afiqa-fair { --afiqa: #c99a06; }
.afiqa-good { --afiqa: #2f9e44; } .afiqa-excellent { --afiqa: #0b7285; }
#afiqa-attention img { width: 100%; height: 100%; object-fit: contain; }
.afiqa-note { font-size: 0.95rem; opacity: 0.9; }
.afiqa-legend { display: flex; align-items: center; gap: 0.6rem; font-size: 0.9rem; margin: 0.2rem 0.4rem; }
.afiqa-legend-bar { flex: 1; height: 14px; border-radius: 7px; border: 1px solid var(--border-color-primary); }
#afiqa-batch-table td, #afiqa-batch-table th { white-space: nowrap; }
#afiqa-batch-table td:last-child { white-space: normal; }
"""
