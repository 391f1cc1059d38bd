package dev.edgeloop.ktx

import dev.edgeloop.EdgeloopException
import dev.edgeloop.GenerateConfig
import dev.edgeloop.Session
import dev.edgeloop.TokenListener
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.launch

/**
 * The reply to [prompt] as a cold [Flow] of text pieces, generated when
 * collected (off the caller's thread). A collector that stops early
 * (`take`, a cancelled scope) stops generation; a slow collector slows it.
 * Errors arrive as [EdgeloopException]s thrown from `collect`.
 *
 * ```
 * session.replyFlow("Hello!").collect { piece -> textView.append(piece) }
 * ```
 */
fun Session.replyFlow(prompt: String, config: GenerateConfig = GenerateConfig()): Flow<String> =
    callbackFlow {
        val session = this@replyFlow
        val listener = object : TokenListener {
            override fun onToken(text: String): Boolean = trySendBlocking(text).isSuccess
        }
        launch {
            try {
                session.generateAsync(prompt, config, listener)
                close()
            } catch (e: EdgeloopException) {
                close(e)
            }
        }
        awaitClose { session.cancel() }
    }

/** The whole reply to [prompt] without blocking the caller's thread. */
suspend fun Session.reply(prompt: String, config: GenerateConfig = GenerateConfig()): String =
    generateAsync(prompt, config, null).text
