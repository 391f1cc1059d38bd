package dev.edgeloop

import dev.edgeloop.ktx.reply
import dev.edgeloop.ktx.replyFlow
import java.nio.file.Files
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.BeforeClass
import org.junit.Test

/**
 * The Kotlin API on the JVM against the desktop build of the library and
 * the real default model (as an Android app uses it, minus the device).
 */
class EdgeloopTest {
    companion object {
        private const val MODEL = "smollm2-135m-instruct"
        private const val PROMPT = "What is the capital of France?"
        private lateinit var engine: Engine

        @BeforeClass
        @JvmStatic
        fun open() {
            engine = Engine.open(MODEL, EngineConfig())
        }

        @AfterClass
        @JvmStatic
        fun close() {
            engine.close()
        }

        fun greedy(maxTokens: Int) = GenerateConfig(maxTokens = maxTokens.toUInt(), temperature = 0.0f)
    }

    private class Collect(val stopAfter: Int = Int.MAX_VALUE) : TokenListener {
        val pieces = mutableListOf<String>()
        override fun onToken(text: String): Boolean {
            pieces.add(text)
            return pieces.size < stopAfter
        }
    }

    @Test
    fun describesTheModel() {
        val info = engine.info()
        assertEquals(MODEL, info.name)
        assertEquals("llama", info.architecture)
        // Auto: a hardware GPU when there is one, else the CPU and why.
        assertTrue(info.backend == Backend.CPU || info.backend == Backend.GPU)
        assertEquals(info.backend == Backend.CPU, info.backendNote != null)
        assertTrue(info.device.isNotEmpty())
        assertEquals(30u, info.layers)
        assertEquals("0.1.0", version())
    }

    @Test
    fun streamedPiecesMakeTheReply() {
        val listener = Collect()
        val r = engine.newSession(null).generate(PROMPT, greedy(16), listener)
        assertEquals(FinishReason.LENGTH, r.finishReason)
        assertEquals(16u, r.completionTokens)
        assertTrue(listener.pieces.size > 1)
        assertEquals(r.text, listener.pieces.joinToString(""))
    }

    @Test
    fun flowAndSuspendCallsGiveTheBlockingReply() = runBlocking {
        val blocking = engine.newSession(null).generate(PROMPT, greedy(16), null).text
        val flowed = engine.newSession(null).replyFlow(PROMPT, greedy(16)).toList()
        assertEquals(blocking, flowed.joinToString(""))
        assertEquals(blocking, engine.newSession(null).reply(PROMPT, greedy(16)))
    }

    @Test
    fun takingPartOfTheFlowStopsGeneration() = runBlocking {
        val session = engine.newSession(null)
        val first = session.replyFlow("Write a long essay about the sea.", greedy(2000)).take(3).toList()
        assertEquals(3, first.size)
        // The stopped turn is not kept, and the session goes on working.
        assertTrue(session.messages().isEmpty())
        assertEquals(4u, session.generate(PROMPT, greedy(4), null).completionTokens)
    }

    @Test
    fun aListenerReturningFalseCancels() {
        val listener = Collect(stopAfter = 2)
        val r = engine.newSession(null).generate(PROMPT, greedy(64), listener)
        assertEquals(FinishReason.CANCELLED, r.finishReason)
        assertEquals(2, listener.pieces.size)
    }

    @Test
    fun solvesWithSelfConsistency() {
        val r = engine.solve("What is 7 + 5?", SolveConfig(strategy = "self-consistency", samples = 4u, maxTokens = 64u))
        assertEquals(4u, r.spend.samples)
        assertEquals(4, r.samples.size)
        assertNotNull(r.answer)
        assertTrue(r.confidence > 0.0 && r.confidence <= 1.0)
    }

    @Test
    fun keepsAndExportsTraces() {
        val dir = Files.createTempDirectory("edgeloop-kotlin")
        Traces.open(dir.resolve("traces.sqlite").toString(), null).use { traces ->
            val checked = engine.solveChecked(
                "What is 3 + 4?",
                SolveConfig(strategy = "self-consistency", samples = 4u, maxTokens = 64u),
                VerifyConfig(stages = listOf("agreement"), votes = 1u, minShare = 0.0),
                traces,
                true,
            )
            val id = checked.traceId!!
            assertEquals(listOf(id), traces.list(10u, 0u, null).map { it.id })
            assertTrue(traces.recordJson(id)!!.contains("\"id\":\"$id\""))
            assertNull(traces.recordJson("0".repeat(64)))
            assertEquals(1uL, traces.export(dir.resolve("bundle.jsonl").toString(), true))
            assertEquals(1uL, traces.stats().traces)
        }
    }

    @Test
    fun errorsAreTyped() {
        try {
            Engine.open("no-such-model", EngineConfig())
            fail("opened a model that does not exist")
        } catch (e: EdgeloopException.ModelNotFound) {
            assertTrue(e.reason.contains("no-such-model"))
        }
        try {
            engine.newSession(null).generate(PROMPT, greedy(0), null)
            fail("accepted max_tokens = 0")
        } catch (e: EdgeloopException.InvalidArgument) {
            assertTrue(e.reason.contains("max_tokens"))
        }
        try {
            engine.solve("What is 1 + 1?", SolveConfig(strategy = "magic"))
            fail("accepted an unknown strategy")
        } catch (e: EdgeloopException.InvalidArgument) {
            assertTrue(e.reason.contains("magic"))
        }
    }
}
